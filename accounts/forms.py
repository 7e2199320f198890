from django import forms
from django.utils.translation import gettext_lazy as _


class AccountEraseForm(forms.Form):
    """Confirms an account erasure: the e-mail address typed again, and the password when there is one."""

    confirm_email = forms.CharField(
        label=_("Type your e-mail address to confirm"), max_length=254, strip=True
    )
    password = forms.CharField(label=_("Your password"), widget=forms.PasswordInput, required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        if user.has_usable_password():
            self.fields["password"].required = True
        else:
            del self.fields["password"]

    def clean_confirm_email(self):
        value = self.cleaned_data["confirm_email"]
        if value.casefold() != (self.user.email or "").casefold():
            raise forms.ValidationError(
                _("This is not the e-mail address of your account."), code="mismatch"
            )
        return value

    def clean_password(self):
        value = self.cleaned_data.get("password", "")
        if not self.user.check_password(value):
            raise forms.ValidationError(_("Wrong password."), code="wrong_password")
        return value
